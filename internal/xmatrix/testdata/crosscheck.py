"""Cross-check fedsender's X-Matrix signing with the libraries Synapse uses.

Run by crosscheck_test.go with Debian's /usr/bin/python3 and the packages
python3-signedjson, python3-canonicaljson and python3-unpaddedbase64.

Reads one JSON document on stdin:
  go_server, go_key_id, go_verify_key   the Go side's signer
  go_objects    [str]   objects signed by Go's SignJSON, as sent
  go_requests   [{method, uri, destination, body: str|null, authorization}]
  canonical     [{input: str, go: str}]   Go's canonical form of each input
  py_objects    [str]   objects for Python to sign
  py_requests   [{method, uri, destination, body: str|null}] for Python to sign
Writes one JSON document on stdout:
  errors        [str]   every disagreement found on the Python side
  py_server, py_key_id, py_verify_key
  py_objects    [str]   signed by signedjson, laid out non-canonically
  py_requests   [{method, uri, destination, body, authorization}]
"""

import json
import re
import sys

from canonicaljson import encode_canonical_json
from signedjson.key import (
    decode_verify_key_bytes,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

PY_SERVER = "py.example"


def parse_auth_header(header):
    """Synapse's _parse_auth_header (synapse/federation/transport/server/_base.py)."""
    space_or_tab = "[ \t]"
    params = re.split(
        rf"{space_or_tab}*,{space_or_tab}*",
        re.split(r"^X-Matrix +", header, maxsplit=1)[1],
    )
    param_dict = {k.lower(): v for k, v in [p.split("=", maxsplit=1) for p in params]}

    def strip_quotes(value):
        if value.startswith('"'):
            return re.sub("\\\\(.)", lambda m: m.group(1), value[1:-1])
        return value

    origin = strip_quotes(param_dict["origin"])
    key = strip_quotes(param_dict["key"])
    sig = strip_quotes(param_dict["sig"])
    destination = param_dict.get("destination")
    if destination is not None:
        destination = strip_quotes(destination)
    return origin, key, sig, destination


def check_go(doc, errors):
    server, key_id = doc["go_server"], doc["go_key_id"]
    verify_key = decode_verify_key_bytes(key_id, decode_base64(doc["go_verify_key"]))

    for i, text in enumerate(doc["go_objects"]):
        obj = json.loads(text)
        if encode_canonical_json(obj) != text.encode("utf-8"):
            errors.append(f"go object {i}: not canonical per python canonicaljson: {text!r}")
        try:
            verify_signed_json(obj, server, verify_key)
        except SignatureVerifyException as e:
            errors.append(f"go object {i}: signedjson rejects it: {e}: {text!r}")

    for i, req in enumerate(doc["go_requests"]):
        try:
            origin, key, sig, destination = parse_auth_header(req["authorization"])
        except Exception as e:  # noqa: BLE001 - any parse failure is a finding
            errors.append(f"go request {i}: Synapse cannot parse {req['authorization']!r}: {e!r}")
            continue
        if (origin, key, destination) != (server, key_id, req["destination"]):
            errors.append(f"go request {i}: header names {origin!r} {key!r} {destination!r}")
        signed = {
            "method": req["method"],
            "uri": req["uri"],
            "origin": origin,
            "destination": destination,
            "signatures": {origin: {key: sig}},
        }
        if req["body"] is not None:
            signed["content"] = json.loads(req["body"])
        try:
            verify_signed_json(signed, origin, verify_key)
        except SignatureVerifyException as e:
            errors.append(f"go request {i}: signedjson rejects it: {e}: {req!r}")

    for i, case in enumerate(doc["canonical"]):
        want = encode_canonical_json(json.loads(case["input"])).decode("utf-8")
        if want != case["go"]:
            errors.append(
                f"canonical {i}: input {case['input']!r}: python {want!r}, go {case['go']!r}"
            )


def sign_py(doc, out):
    signing_key = generate_signing_key("py1")
    verify_key = get_verify_key(signing_key)
    out["py_server"] = PY_SERVER
    out["py_key_id"] = "ed25519:py1"
    out["py_verify_key"] = encode_verify_key_base64(verify_key)

    # Laid out the way json.dumps does by default (spaces, \u escapes), so the
    # Go side has to canonicalise before it verifies.
    out["py_objects"] = [
        json.dumps(sign_json(json.loads(text), PY_SERVER, signing_key), indent=1)
        for text in doc["py_objects"]
    ]

    out["py_requests"] = []
    for req in doc["py_requests"]:
        # As Synapse's MatrixFederationHttpClient.build_auth_headers does.
        request = {
            "method": req["method"],
            "uri": req["uri"],
            "origin": PY_SERVER,
            "destination": req["destination"],
        }
        if req["body"] is not None:
            request["content"] = json.loads(req["body"])
        request = sign_json(request, PY_SERVER, signing_key)
        (key, sig), = request["signatures"][PY_SERVER].items()
        header = 'X-Matrix origin="%s",key="%s",sig="%s",destination="%s"' % (
            PY_SERVER,
            key,
            sig,
            req["destination"],
        )
        body = None if req["body"] is None else json.dumps(json.loads(req["body"]))
        out["py_requests"].append(dict(req, body=body, authorization=header))


def main():
    doc = json.load(sys.stdin)
    out = {"errors": []}
    check_go(doc, out["errors"])
    sign_py(doc, out)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
