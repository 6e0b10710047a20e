"""A Flask app for the end-to-end tests (gunicorn, sync workers)."""

import os

from flask import Flask, jsonify, request

import profwatch
import profwatch.flask
from common import burn, per_process_burner

profwatch.configure()  # PROFWATCH_SERVICE, PROFWATCH_BUILD, PROFWATCH_SIDECAR, ...
app = Flask(__name__)


def flask_hot_items(ms):
    burn(ms)


def flask_hot_other(ms):
    burn(ms)


def _ms():
    return float(request.args.get("ms", "0"))


@app.route("/healthz")
def healthz():
    return "ok"


@app.route("/items/<int:id>")
def item(id):
    flask_hot_items(_ms())
    return jsonify(id=id, pid=os.getpid())


@app.route("/other/<name>")
def other(name):
    flask_hot_other(_ms())
    return jsonify(name=name, pid=os.getpid())


@app.route("/work")
def work():
    per_process_burner()(_ms())
    return jsonify(pid=os.getpid())


@app.route("/stats")
def stats():
    return jsonify(pid=os.getpid(), **profwatch.stats())


profwatch.flask.instrument(app)

if os.environ.get("PW_WARMUP_IN_MASTER") == "1":
    # Under gunicorn --preload this runs in the master before it forks the workers, so
    # profwatch's threads and sidecar connection are live when the workers are forked.
    with app.test_client() as client:
        client.get("/items/0?ms=1", buffered=True).close()
