"""profwatch WSGI middleware: one event per request to the local sidecar (stdlib only)."""
import json, os, socket, threading, time


class ProfwatchMiddleware:
    def __init__(self, app, service, build="", endpoint=None, socket_path=None, udp=None):
        self.app, self.service, self.build = app, service, build
        self.endpoint = endpoint or (lambda env: f"{env['REQUEST_METHOD']} {env.get('PATH_INFO') or '/'}")
        self.path = socket_path or os.environ.get("PROFWATCH_AGENT_SOCKET", "/run/profwatch/agent.sock")
        self.udp, self.sock, self.lock = udp, None, threading.Lock()  # udp: ("127.0.0.1", 4042)

    def __call__(self, environ, start_response):
        wall0, cpu0, seen = time.time_ns(), time.thread_time_ns(), {"status": 500}
        def start(status, headers, exc_info=None):
            seen["status"] = int(status[:3])
            return start_response(status, headers, exc_info)
        body = self.app(environ, start)
        try:
            yield from body
        finally:
            getattr(body, "close", lambda: None)()
            self.send({"ts": wall0, "service": self.service, "endpoint": self.endpoint(environ),
                       "build": self.build, "status": seen["status"], "cpu_ns": time.thread_time_ns() - cpu0,
                       "wall_ns": time.time_ns() - wall0})

    def send(self, event):  # never raises into the app: a lost event beats a failed request
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self.lock:
            try:
                if self.udp:
                    self.sock = self.sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.sock.sendto(line, self.udp)
                else:
                    if self.sock is None:
                        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        self.sock.connect(self.path)
                    self.sock.sendall(line)
            except OSError:
                self.sock = None
