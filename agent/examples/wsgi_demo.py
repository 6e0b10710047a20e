"""A demo WSGI app measured by the profwatch Python package (agent/python), used as is from
the tree (pure standard library, nothing to install).

    python3 wsgi_demo.py --requests 50            # call the app directly, then exit
    python3 wsgi_demo.py --serve 8000             # serve it with wsgiref
Transport: PROFWATCH_AGENT_SOCKET (Unix socket, default /run/profwatch/agent.sock) or
PROFWATCH_AGENT_UDP=127.0.0.1:4042. Real apps use profwatch.configure() or PROFWATCH_SIDECAR
and a framework integration instead: see agent/python/README.md.
"""
import argparse
import os
import sys
from wsgiref.simple_server import make_server
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import profwatch  # noqa: E402

ROUTES = {"/burn": "/burn"}


def app(environ, start_response):
    if environ["PATH_INFO"] == "/burn":
        total = sum(i * i for i in range(200_000))  # some CPU to measure
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--build", default="demo-1")
    p.add_argument("--serve", type=int)
    args = p.parse_args()
    udp = os.environ.get("PROFWATCH_AGENT_UDP")
    sidecar = "udp://" + udp if udp else "unix://" + os.environ.get("PROFWATCH_AGENT_SOCKET", "/run/profwatch/agent.sock")
    profwatch.configure(service="wsgi-demo", build=args.build, sidecar=sidecar, profile_hz=0)
    wrapped = profwatch.WSGIMiddleware(app, route=lambda environ: ROUTES.get(environ["PATH_INFO"]))
    if args.serve:
        make_server("127.0.0.1", args.serve, wrapped).serve_forever()
    for i in range(args.requests):
        environ = {"PATH_INFO": "/burn" if i % 5 else "/missing"}
        setup_testing_defaults(environ)
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        body.close()
    profwatch.flush()
    print("sent %d events; %s" % (args.requests, profwatch.stats()))


if __name__ == "__main__":
    main()
