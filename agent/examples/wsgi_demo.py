"""A demo WSGI app under ProfwatchMiddleware.

    python3 wsgi_demo.py --requests 50            # call the app directly, then exit
    python3 wsgi_demo.py --serve 8000             # serve it with wsgiref
Transport: PROFWATCH_AGENT_SOCKET (Unix socket, default) or PROFWATCH_AGENT_UDP=127.0.0.1:4042.
"""
import argparse, os, sys
from wsgiref.simple_server import make_server
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profwatch_wsgi import ProfwatchMiddleware


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
    udp = (udp.rsplit(":", 1)[0], int(udp.rsplit(":", 1)[1])) if udp else None
    wrapped = ProfwatchMiddleware(app, "wsgi-demo", build=args.build, udp=udp)
    if args.serve:
        make_server("127.0.0.1", args.serve, wrapped).serve_forever()
    for i in range(args.requests):
        environ = {"PATH_INFO": "/burn" if i % 5 else "/missing"}
        setup_testing_defaults(environ)
        b"".join(wrapped(environ, lambda status, headers, exc_info=None: None))
    print(f"sent {args.requests} events")


if __name__ == "__main__":
    main()
