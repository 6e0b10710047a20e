"""configure(): environment defaults, precedence, and values the collector would refuse."""

import pytest

from profwatch._config import Sidecar, make_config, parse_sidecar


def test_defaults_come_from_the_environment():
    env = {
        "PROFWATCH_SERVICE": "shop",
        "PROFWATCH_BUILD": "812",
        "PROFWATCH_DC": "eu1",
        "PROFWATCH_SIDECAR": "udp://127.0.0.1:4042",
    }
    c = make_config(env=env)
    assert (c.service, c.build, c.dc) == ("shop", "812", "eu1")
    assert c.sidecar == Sidecar("udp", ("127.0.0.1", 4042))
    assert (c.profile_hz, c.sample_rate, c.profile_interval) == (99, 1.0, 10.0)


def test_arguments_win_over_the_environment():
    c = make_config(service="cart", sidecar="unix:///tmp/a.sock", profile_hz=10, env={"PROFWATCH_SERVICE": "shop"})
    assert c.service == "cart"
    assert c.sidecar == Sidecar("unix", "/tmp/a.sock")
    assert c.profile_hz == 10


def test_the_default_sidecar_is_the_standard_socket():
    assert make_config(service="s", env={}).sidecar == Sidecar("unix", "/run/profwatch/agent.sock")


@pytest.mark.parametrize(
    "url,expected",
    [
        ("unix:///run/profwatch/agent.sock", Sidecar("unix", "/run/profwatch/agent.sock")),
        ("udp://127.0.0.1:4042", Sidecar("udp", ("127.0.0.1", 4042))),
        ("udp://[::1]:4042", Sidecar("udp", ("::1", 4042))),
    ],
)
def test_sidecar_urls(url, expected):
    assert parse_sidecar(url) == expected
    assert str(expected) == url


@pytest.mark.parametrize("url", ["/run/agent.sock", "tcp://127.0.0.1:1", "udp://127.0.0.1", "udp://:4042", "udp://h:99999", "unix://"])
def test_bad_sidecar_urls_name_what_to_write(url):
    with pytest.raises(ValueError, match="sidecar"):
        make_config(service="s", sidecar=url, env={})


def test_bad_values_name_their_source():
    with pytest.raises(ValueError, match="service is required: pass configure.service=.... or set PROFWATCH_SERVICE"):
        make_config(env={})
    with pytest.raises(ValueError, match="PROFWATCH_SAMPLE_RATE"):
        make_config(service="s", env={"PROFWATCH_SAMPLE_RATE": "0"})
    with pytest.raises(ValueError, match="profile_hz"):
        make_config(service="s", profile_hz=5000, env={})
    with pytest.raises(ValueError, match="build: 129 bytes"):
        make_config(service="s", build="x" * 129, env={})
    with pytest.raises(ValueError, match="control characters"):
        make_config(service="a\nb", env={})


def test_the_signal_flag_reads_as_a_flag():
    assert make_config(service="s", env={}).profile_signal is True
    assert make_config(service="s", env={"PROFWATCH_PROFILE_SIGNAL": "0"}).profile_signal is False
    assert make_config(service="s", env={"PROFWATCH_PROFILE_SIGNAL": "off"}).profile_signal is False
    assert make_config(service="s", profile_signal=True, env={"PROFWATCH_PROFILE_SIGNAL": "0"}).profile_signal is True
    with pytest.raises(ValueError, match="PROFWATCH_PROFILE_SIGNAL: 'maybe' is not a flag"):
        make_config(service="s", env={"PROFWATCH_PROFILE_SIGNAL": "maybe"})
