# Golden-vector checker for wire contract v1 (see tests/vectors/README.md).
#
# Runs unchanged on CPython and MicroPython (no f-strings, typing, os.path):
#
#   python tests/vectors/check_vectors.py [tests/vectors/wire_v1.json]
#   MICROPYPATH=<repo root> micropython tests/vectors/check_vectors.py tests/vectors/wire_v1.json
#   ... check_vectors.py --device wire_v1.json   # skip "heavy" cases (100 KB heap)
#
# Prints one line per failing case, then "N passed, M failed"; exit status 1 when
# any case failed (or none ran).  The vector file is a JSON list with one case per
# line, read line by line so that a small MicroPython heap never holds it all.

import binascii
import gc
import json
import sys

try:
    import fieldwatch.wire  # noqa: F401
except ImportError:  # CPython run as a script: put the repo root on the path
    _f = __file__.replace("\\", "/")
    sys.path.insert(0, "/".join(_f.split("/")[:-3]) or ".")
# The contract's modules themselves, not codec (which gathers them for CPython code):
# one module dict less in a 100 KB heap.
from fieldwatch.wire import batch, device, validate  # noqa: E402
from fieldwatch.wire.contract import WireError  # noqa: E402

ENCODER_MODULES = (device, validate, batch)

REL_TOL = 1e-9


# ---- reading the vector file ------------------------------------------------------

def iter_cases(path, skip_heavy=False):
    """Yield the cases of a one-case-per-line JSON list (UTF-8), one at a time.

    With skip_heavy, a case whose line starts {"name": "...", "heavy": true is not
    parsed (nor even read whole): a stub {"name": ..., "skipped": True} is yielded.
    """
    f = open(path, "rb")
    try:
        if f.readline().strip() != b"[":
            raise ValueError("%s: the first line must be '[' alone" % path)
        while True:
            head = f.readline(256)
            if not head:
                break
            if skip_heavy and b'"heavy": true' in head:
                name = head[head.find(b'"name": "') + 9:]
                name = name[:name.find(b'"')].decode()
                while head and head[-1:] != b"\n":  # skip the rest of the line
                    head = f.readline(256)
                yield {"name": name, "skipped": True}
                continue
            parts = [head]
            while head[-1:] != b"\n":
                head = f.readline(4096)
                if not head:
                    break
                parts.append(head)
            line = b"".join(parts).decode("utf-8").strip()
            parts = head = None
            if not line or line == "]":
                continue
            if line[-1] == ",":
                line = line[:-1]
            yield json.loads(line)
    finally:
        f.close()


# ---- building payloads ------------------------------------------------------------
# payload_text / payload_hex / samples_hex are a string, or a list of segments, each
# a string or [string, count] (the string repeated count times).

def _segments(spec, to_bytes):
    if isinstance(spec, str):
        spec = [spec]
    parts = []
    total = 0
    for seg in spec:
        if isinstance(seg, list):
            b, count = to_bytes(seg[0]), seg[1]
        else:
            b, count = to_bytes(seg), 1
        parts.append((b, count))
        total += len(b) * count
    if len(parts) == 1 and parts[0][1] == 1:
        return parts[0][0]
    out = bytearray(total)  # filled in place: no temporary copies on a small heap
    i = 0
    for b, count in parts:
        n = len(b)
        for _ in range(count):
            out[i:i + n] = b
            i += n
    return bytes(out)


def _utf8(s):
    return s.encode("utf-8")


def text_bytes(spec):
    return _segments(spec, _utf8)


def hex_bytes(spec):
    return _segments(spec, binascii.unhexlify)


def to_hex(b):
    return binascii.hexlify(b).decode()


def case_payload(case):
    if "payload_text" in case:
        return text_bytes(case["payload_text"])
    if "payload_hex" in case:
        return hex_bytes(case["payload_hex"])
    return None


# ---- comparing ---------------------------------------------------------------------

def _is_bool(x):
    return x is True or x is False


def _normalise(x):
    # The decoder's dict in the vectors' terms: tuples become lists, and a bytes
    # value under key k moves to key k + "_hex" (diff compares it with the hex).
    if isinstance(x, dict):
        out = {}
        for k in x:
            v = x[k]
            if isinstance(v, (bytes, bytearray)):
                out[k + "_hex"] = v
            else:
                out[k] = _normalise(v)
        return out
    if isinstance(x, (list, tuple)):
        return [_normalise(v) for v in x]
    return x


def diff(got, want, path="$"):
    """None when got matches want (floats to REL_TOL), else where and how they differ."""
    if _is_bool(want) or _is_bool(got):
        if got is want:
            return None
        return "%s: got %r, want %r" % (path, got, want)
    if isinstance(want, float):
        if not isinstance(got, float):
            return "%s: got %r (%s), want float %r" % (path, got, type(got).__name__, want)
        if got == want or abs(got - want) <= REL_TOL * max(abs(got), abs(want)):
            return None
        return "%s: got %r, want %r" % (path, got, want)
    if isinstance(want, int):
        if not isinstance(got, int) or got != want:
            return "%s: got %r, want %r" % (path, got, want)
        return None
    if isinstance(got, (bytes, bytearray)):  # raw bytes against hex (or hex segments)
        if isinstance(want, (str, list)) and bytes(got) == hex_bytes(want):
            return None
        return "%s: got %s, want %s" % (path, to_hex(got)[:80], want if isinstance(want, str) else "hex segments")
    if isinstance(want, str) or want is None:
        if type(got) is not type(want) or got != want:
            return "%s: got %r, want %r" % (path, got, want)
        return None
    if isinstance(want, list):
        if not isinstance(got, list):
            return "%s: got %r, want a list" % (path, got)
        if len(got) != len(want):
            return "%s: %d items, want %d" % (path, len(got), len(want))
        for i in range(len(want)):
            d = diff(got[i], want[i], "%s[%d]" % (path, i))
            if d:
                return d
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return "%s: got %r, want an object" % (path, got)
        for k in want:
            if k not in got:
                return "%s: missing key %r" % (path, k)
        for k in got:
            if k not in want:
                return "%s: unexpected key %r = %r" % (path, k, got[k])
        for k in sorted(want):
            d = diff(got[k], want[k], path + "." + k)
            if d:
                return d
        return None
    return "%s: cannot compare with %r" % (path, want)


# ---- running one case --------------------------------------------------------------

def _arg(a):
    # In encoder args an object {"hex": "..."} stands for bytes.
    if isinstance(a, dict) and len(a) == 1 and "hex" in a:
        return hex_bytes(a["hex"])
    return a


def _decode(case, payload):
    """Decode payload; compare with the case's expect or error.  None when it matches."""
    try:
        got = validate.decode(case["topic"], payload, case.get("now_ms"))
    except WireError as e:
        if "error" not in case:
            return "unexpected WireError %s" % e
        if e.code != case["error"]:
            return "error %s, want %s (%s)" % (e.code, case["error"], e.detail)
        return None
    if "error" in case:
        return "decoded without error, want %s" % case["error"]
    return diff(_normalise(got), case["expect"])


def _encode(case):
    enc = case["encode"]
    fn = None
    for mod in ENCODER_MODULES:
        fn = getattr(mod, enc["fn"], None) or fn
    if fn is None:
        return "no encoder %s in fieldwatch.wire" % enc["fn"]
    args = [_arg(a) for a in enc.get("args", [])]
    kwargs = {}
    kw = enc.get("kwargs", {})
    for k in kw:
        kwargs[k] = _arg(kw[k])
    try:
        out = fn(*args, **kwargs)
    except WireError as e:
        if "error" not in case:
            return "encoder raised WireError %s" % e
        if e.code != case["error"]:
            return "encoder error %s, want %s (%s)" % (e.code, case["error"], e.detail)
        return None
    if "error" in case and "expect" not in case:
        return "encoder succeeded, want error %s" % case["error"]
    if not isinstance(out, bytes):
        return "encoder returned %s, want bytes" % type(out).__name__
    if "payload_hex" in case:  # binary: byte-exact
        want = case_payload(case)
        if out != want:
            return "encoded %s, want %s" % (to_hex(out), to_hex(want))
    elif "payload_text" in case:  # JSON: same value, whatever the float text or key order
        d = diff(json.loads(out), json.loads(case_payload(case)), "encoded")
        if d:
            return d
    if "topic" in case:
        return _decode(case, out)
    return None


def run_case(case):
    """None when the case passes, else a one-line reason."""
    try:
        if "encode" in case:
            return _encode(case)
        payload = case_payload(case)
        if payload is None:
            return "case has no payload_text or payload_hex"
        return _decode(case, payload)
    except Exception as e:  # a crash is a failure, never a pass
        return "crashed: %s: %s" % (type(e).__name__, e)


def main(argv):
    device = "--device" in argv
    args = [a for a in argv[1:] if a != "--device"]
    path = args[0] if args else "tests/vectors/wire_v1.json"
    passed = failed = skipped = 0
    # CRC-32 of each name seen, not the name: a few hundred small strings kept for the
    # whole run would be scattered over a 100 KB heap and leave no room for the big
    # payloads (a collision is reported as a duplicate, never passes one;
    # tests/unit/test_wire_vectors.py checks the names exactly).
    names = {}
    for case in iter_cases(path, device):
        name = case.get("name", "?")
        key = binascii.crc32(name.encode())
        if key in names:
            print("FAIL %s: duplicate name" % name)
            failed += 1
            continue
        names[key] = 1
        if case.get("skipped"):
            skipped += 1
            continue
        why = run_case(case)
        case = None
        if why is None:
            passed += 1
        else:
            failed += 1
            print("FAIL %s: %s" % (name, why))
        gc.collect()
    if skipped:
        print("%d heavy cases skipped (--device)" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
