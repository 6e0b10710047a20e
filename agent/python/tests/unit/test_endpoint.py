"""Endpoint names: route templates with {name} placeholders, never raw paths."""

from profwatch._endpoint import Namer, django_template, flask_template, starlette_template


def test_flask_rules():
    assert flask_template("/items/<int:id>") == "/items/{id}"
    assert flask_template("/files/<path:rest>") == "/files/{rest}"
    assert flask_template("/u/<name>/k/<any(a, b):kind>") == "/u/{name}/k/{kind}"


def test_django_routes():
    assert django_template("items/<int:pk>/") == "/items/{pk}/"
    assert django_template("api/v1/<slug:s>/<uuid:u>") == "/api/v1/{s}/{u}"
    assert django_template("") == "/"
    # re_path, joined across include() as ResolverMatch.route does.
    assert django_template(r"^legacy/(?P<year>[0-9]{4})/(\d+)/$") == "/legacy/{year}/{arg}/"
    assert django_template(r"^api/items/(?P<pk>\d+)\.json$") == "/api/items/{pk}.json"


class _Route:
    def __init__(self, path_format, params=()):
        self.path_format = path_format
        self.param_convertors = dict.fromkeys(params)


def test_starlette_routes_and_mounts():
    scope = {"route": _Route("/items/{id}", ["id"]), "root_path": "", "path_params": {"id": 7}}
    assert starlette_template(scope, "") == "/items/{id}"
    mounted = {"route": _Route("/items/{id}", ["id"]), "root_path": "/api/v1", "path_params": {"id": 7}}
    assert starlette_template(mounted, "") == "/api/v1/items/{id}"
    with_param = {"route": _Route("/orders", []), "root_path": "/tenants/acme", "path_params": {"tenant": "acme"}}
    assert starlette_template(with_param, "") == "/tenants/{tenant}/orders"
    behind_proxy = {"route": _Route("/x", []), "root_path": "/prefix", "path_params": {}}
    assert starlette_template(behind_proxy, "/prefix") == "/x"
    assert starlette_template({"root_path": ""}, "") is None


def test_names_methods_and_unmatched():
    n = Namer()
    assert n.name("GET", "/items/{id}") == "GET /items/{id}"
    assert n.name("BREW", "/pot") == "OTHER /pot"
    assert n.name("POST", None) == "POST <unmatched>"
    assert n.name("GET", "/" + "x" * 300) == "GET <unmatched>"
    assert n.name("GET", "/a\nb") == "GET <unmatched>"


def test_the_number_of_endpoints_is_capped():
    n = Namer(limit=3)
    names = [n.name("GET", "/p%d" % i) for i in range(5)]
    assert names == ["GET /p0", "GET /p1", "GET /p2", "GET <unmatched>", "GET <unmatched>"]
    assert n.over_limit == 2
    assert n.name("GET", "/p1") == "GET /p1"
