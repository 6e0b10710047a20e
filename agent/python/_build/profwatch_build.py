"""The package's PEP 517 build backend: standard library only, so that
``pip install ./agent/python`` works offline, with or without build isolation, on any
Python >= 3.9 (setuptools is not needed; the one bundled with a 3.11 venv cannot build a wheel
without the separate ``wheel`` package).

It builds a pure-Python ``py3-none-any`` wheel of the ``profwatch`` package, an sdist, and a
PEP 660 editable wheel (a ``.pth`` file pointing at this folder). The version is
``profwatch.__version__``; the other metadata is below.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

NAME = "profwatch"
SUMMARY = (
    "profwatch for Python: per-request CPU and Python stack profiles for WSGI and ASGI "
    "services (Django, Flask, FastAPI)"
)
REQUIRES_PYTHON = ">=3.9"
LICENSE = "Apache-2.0"
CLASSIFIERS = (
    "Programming Language :: Python :: 3",
    "Operating System :: POSIX :: Linux",
    "Framework :: Django",
    "Framework :: Flask",
    "Framework :: FastAPI",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same sources give the same wheel


def _version() -> str:
    with open(os.path.join(ROOT, NAME, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if m is None:
        raise RuntimeError("profwatch/__init__.py has no __version__")
    return m.group(1)


def _metadata() -> str:
    lines = [
        "Metadata-Version: 2.1",
        "Name: " + NAME,
        "Version: " + _version(),
        "Summary: " + SUMMARY,
        "License: " + LICENSE,
        "Requires-Python: " + REQUIRES_PYTHON,
    ]
    lines += ["Classifier: " + c for c in CLASSIFIERS]
    readme = os.path.join(ROOT, "README.md")
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _sources():
    pkg = os.path.join(ROOT, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            yield NAME + "/" + name, os.path.join(pkg, name)


def _dist_info() -> str:
    return "%s-%s.dist-info" % (NAME, _version())


class _Wheel:
    def __init__(self, path: str) -> None:
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self._record = []

    def add(self, arcname: str, data: bytes) -> None:
        info = zipfile.ZipInfo(arcname, _EPOCH)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self._zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self._record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self, dist_info: str) -> None:
        record = dist_info + "/RECORD"
        self._record.append(record + ",,")
        info = zipfile.ZipInfo(record, _EPOCH)
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, "\n".join(self._record) + "\n")
        self._zip.close()


def _write_wheel(wheel_directory: str, files) -> str:
    name = "%s-%s-py3-none-any.whl" % (NAME, _version())
    w = _Wheel(os.path.join(wheel_directory, name))
    for arcname, data in files:
        w.add(arcname, data)
    di = _dist_info()
    w.add(di + "/METADATA", _metadata().encode("utf-8"))
    w.add(di + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: profwatch_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    w.add(di + "/top_level.txt", (NAME + "\n").encode())
    w.close(di)
    return name


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    di = _dist_info()
    os.makedirs(os.path.join(metadata_directory, di), exist_ok=True)
    with open(os.path.join(metadata_directory, di, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return di


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, ((arc, _read(path)) for arc, path in _sources()))


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [("profwatch_editable.pth", (ROOT + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, _version())
    name = base + ".tar.gz"
    files = [("pyproject.toml", os.path.join(ROOT, "pyproject.toml")), ("README.md", os.path.join(ROOT, "README.md"))]
    files.append(("_build/profwatch_build.py", os.path.abspath(__file__)))
    files += list(_sources())
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for arc, path in files + [("PKG-INFO", None)]:
            data = _metadata().encode("utf-8") if path is None else _read(path)
            info = tarfile.TarInfo(base + "/" + arc)
            info.size = len(data)
            info.mtime = int(time.mktime(_EPOCH + (0, 0, -1)))
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return name
