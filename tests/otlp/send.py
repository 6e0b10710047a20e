"""An independent OTLP profiles producer for the end-to-end tests (tests/e2e/otlp.rs).

Builds ExportProfilesServiceRequest messages with the classes PyPI's opentelemetry-proto
generates (requirements.txt pins it), and sends them to a profwatch server over OTLP/HTTP
(protobuf, or JSON as the OTLP spec writes it) or OTLP/gRPC (grpcio). Prints one JSON line per
request: what the server answered.

    send.py --service S --token T (--http URL --encoding proto|json | --grpc HOST:PORT)
            [--case good|bad-index|missing-zero|deep-nesting] [--gzip]

The "good" request holds two profiles of one resource: a CPU profile (samples/count, a period
of 10 ms of CPU) whose stacks and totals the Rust test asserts exactly, and an allocation
profile the server must reject in partial_success.
"""

import argparse
import base64
import gzip
import json
import sys
import time
import urllib.error
import urllib.request

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as svc,
)
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2_grpc as svc_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1 import resource_pb2 as resource

TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(17, 25))


class Dictionary:
    """The request's tables, each with its zero value first, as the spec requires."""

    def __init__(self):
        self.d = pb.ProfilesDictionary()
        self.d.mapping_table.add()
        self.d.location_table.add()
        self.d.function_table.add()
        self.d.link_table.add()
        self.d.string_table.append("")
        self.d.attribute_table.add()
        self.d.stack_table.add()
        self.strings = {"": 0}
        self.functions = {}
        self.locations = {}
        self.stacks = {}
        self.attributes = {}

    def s(self, text):
        if text not in self.strings:
            self.strings[text] = len(self.d.string_table)
            self.d.string_table.append(text)
        return self.strings[text]

    def function(self, name):
        if name not in self.functions:
            self.functions[name] = len(self.d.function_table)
            self.d.function_table.add(name_strindex=self.s(name), filename_strindex=self.s("app.py"))
        return self.functions[name]

    def location(self, *names):
        """A location of one function, or of several inlined (innermost first)."""
        if names not in self.locations:
            self.locations[names] = len(self.d.location_table)
            loc = self.d.location_table.add(address=0x1000 + len(self.d.location_table))
            for i, n in enumerate(names):
                loc.lines.add(function_index=self.function(n), line=10 + i)
        return self.locations[names]

    def stack(self, *frames):
        """Frames leaf first; a frame is a name or a tuple of inlined names."""
        key = tuple(frames)
        if key not in self.stacks:
            self.stacks[key] = len(self.d.stack_table)
            st = self.d.stack_table.add()
            for f in frames:
                st.location_indices.append(self.location(*(f if isinstance(f, tuple) else (f,))))
        return self.stacks[key]

    def attr(self, key, value):
        if (key, value) not in self.attributes:
            self.attributes[(key, value)] = len(self.d.attribute_table)
            kv = self.d.attribute_table.add(key_strindex=self.s(key))
            kv.value.string_value = value
        return self.attributes[(key, value)]

    def link(self):
        self.d.link_table.add(trace_id=TRACE_ID, span_id=SPAN_ID)
        return len(self.d.link_table) - 1


def good_request(service):
    d = Dictionary()
    req = svc.ExportProfilesServiceRequest()
    rp = req.resource_profiles.add()
    for key, value in [
        ("service.name", service),
        ("service.version", "v2.3.1"),
        ("host.name", "web-7"),
        ("cloud.region", "eu-west-1"),
        ("cloud.availability_zone", "eu-west-1a"),
        ("deployment.environment.name", "prod"),
    ]:
        rp.resource.attributes.add(key=key, value=common.AnyValue(string_value=value))
    # An attribute keyed through the string table, as profiles messages may.
    rp.resource.attributes.add(
        key_strindex=d.s("process.runtime.name"), value=common.AnyValue(string_value="cpython")
    )
    sp = rp.scope_profiles.add()
    sp.scope.name = "profwatch-e2e"
    now = time.time_ns()

    cpu = sp.profiles.add()
    cpu.sample_type.type_strindex = d.s("samples")
    cpu.sample_type.unit_strindex = d.s("count")
    cpu.period_type.type_strindex = d.s("cpu")
    cpu.period_type.unit_strindex = d.s("nanoseconds")
    cpu.period = 10_000_000
    cpu.time_unix_nano = now - 5_000_000_000
    cpu.duration_nano = 5_000_000_000
    post = [d.attr("http.route", "/checkout/{id}"), d.attr("http.request.method", "POST")]
    get_cart = [d.attr("http.route", "/cart"), d.attr("http.request.method", "GET")]
    # main → serve → handle_checkout → compute_tax: 7 samples.
    cpu.samples.add(
        stack_index=d.stack("compute_tax", "handle_checkout", "serve", "main"),
        attribute_indices=post,
        values=[7],
    )
    # ... → json_encode, with round_cents inlined into it: 3 samples (2 + 1 observations).
    cpu.samples.add(
        stack_index=d.stack(("round_cents", "json_encode"), "handle_checkout", "serve", "main"),
        attribute_indices=post,
        values=[2, 1],
        timestamps_unix_nano=[now - 4_000_000_000, now - 3_000_000_000],
    )
    # main → serve → handle_cart, in a traced request: 2 observations by timestamp alone.
    cpu.samples.add(
        stack_index=d.stack("handle_cart", "serve", "main"),
        attribute_indices=get_cart + [d.attr("thread.name", "worker-1")],
        link_index=d.link(),
        timestamps_unix_nano=[now - 2_000_000_000, now - 1_000_000_000],
    )
    # main → idle, outside any request: 5 samples.
    cpu.samples.add(stack_index=d.stack("idle", "main"), values=[5])

    alloc = sp.profiles.add()
    alloc.sample_type.type_strindex = d.s("alloc_space")
    alloc.sample_type.unit_strindex = d.s("bytes")
    alloc.time_unix_nano = now
    alloc.samples.add(stack_index=d.stack("idle", "main"), values=[4096])

    req.dictionary.CopyFrom(d.d)
    return req


def bad_request(service, case):
    req = good_request(service)
    d = req.dictionary
    if case == "bad-index":
        req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 99
    elif case == "missing-zero":
        # The mapping table without its zero element (every location keeps mapping 0).
        del d.mapping_table[:]
    elif case == "deep-nesting":
        # Attribute values cannot refer back up the tables (no cycles can be written); the
        # unbounded shape is nesting, refused past 16 levels.
        v = common.AnyValue(int_value=1)
        for _ in range(20):
            v = common.AnyValue(array_value=common.ArrayValue(values=[v]))
        d.attribute_table[1].value.CopyFrom(v)
    else:
        raise SystemExit(f"unknown case {case}")
    return req


def otlp_json(req):
    """The request in OTLP/JSON: protobuf's JSON mapping, but trace and span ids in hex."""
    doc = json_format.MessageToDict(req)
    for link in doc.get("dictionary", {}).get("linkTable", []):
        for k in ("traceId", "spanId"):
            if k in link:
                link[k] = base64.b64decode(link[k]).hex()
    return json.dumps(doc).encode()


def send_http(args, req):
    if args.encoding == "json":
        body, ctype = otlp_json(req), "application/json"
    else:
        body, ctype = req.SerializeToString(), "application/x-protobuf"
    headers = {"Content-Type": ctype}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    if args.gzip:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    r = urllib.request.Request(args.http + "/v1development/profiles", data=body, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            status, data, rtype = resp.status, resp.read(), resp.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        status, data, rtype = e.code, e.read(), e.headers.get("Content-Type")
    out = {"status": status, "content_type": rtype}
    if status == 200:
        answer = svc.ExportProfilesServiceResponse()
        if args.encoding == "json":
            json_format.Parse(data.decode(), answer)
        else:
            answer.ParseFromString(data)
        out["rejected"] = answer.partial_success.rejected_profiles
        out["message"] = answer.partial_success.error_message
    else:
        if args.encoding == "json":
            st = json.loads(data)
            out["code"], out["message"] = st.get("code"), st.get("message")
        else:
            out["code"], out["message"] = rpc_status(data)
    return out


def rpc_status(data):
    """code (1) and message (2) of a google.rpc.Status, read by hand: no googleapis package."""
    code, message, i = 0, "", 0

    def varint():
        nonlocal i
        v, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    while i < len(data):
        key = varint()
        if key == (1 << 3):
            code = varint()
        elif key == (2 << 3 | 2):
            n = varint()
            message = data[i : i + n].decode()
            i += n
        else:
            raise SystemExit(f"unexpected field {key} in google.rpc.Status")
    return code, message


def send_grpc(args, req):
    if args.grpc_ca:
        with open(args.grpc_ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.grpc, creds)
    else:
        channel = grpc.insecure_channel(args.grpc)
    with channel:
        stub = svc_grpc.ProfilesServiceStub(channel)
        compression = grpc.Compression.Gzip if args.gzip else grpc.Compression.NoCompression
        try:
            answer = stub.Export(
                req,
                metadata=[("authorization", f"Bearer {args.token}")] if args.token else None,
                timeout=60,
                compression=compression,
            )
        except grpc.RpcError as e:
            return {"code": e.code().name, "message": e.details()}
    return {
        "code": "OK",
        "rejected": answer.partial_success.rejected_profiles,
        "message": answer.partial_success.error_message,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--service", required=True)
    p.add_argument("--token", required=True, help="empty: send no token")
    p.add_argument("--http")
    p.add_argument("--encoding", choices=["proto", "json"], default="proto")
    p.add_argument("--grpc")
    p.add_argument("--grpc-ca", help="gRPC over TLS, trusting this PEM CA")
    p.add_argument("--case", default="good")
    p.add_argument("--gzip", action="store_true")
    args = p.parse_args()
    req = good_request(args.service) if args.case == "good" else bad_request(args.service, args.case)
    if args.grpc:
        out = send_grpc(args, req)
    else:
        out = send_http(args, req)
    out.update(case=args.case, transport="grpc" if args.grpc else f"http-{args.encoding}")
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
