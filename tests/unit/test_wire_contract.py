"""The wire contract's constants live in fieldwatch.wire and nowhere else: the copies
MicroPython forces equal the contract, the other sides import it, and codec is exactly
the union of the contract's modules (issue 11, "Wire")."""

import importlib.util
import re

from edge_agent import gps, keys, outbox
from fieldwatch.wire import batch, codec, contract, device, validate
from fieldwatch.devservices.micropython import REPO_ROOT


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_firmware_clock_copy_of_the_earliest_sane_time_equals_the_contract():
    # firmware/clock.py keeps a literal: MicroPython's const() takes no imported name
    clock = _load(REPO_ROOT / "firmware" / "clock.py", "fw_clock")
    assert clock._MIN_VALID_MS == contract.MIN_TS_MS


def test_firmware_ring_stores_kinds_by_their_contract_index():
    src = (REPO_ROOT / "firmware" / "ring.py").read_text()
    assert "KINDS = RECORD_KINDS" in src
    # the flash format depends on this order: changing it would misread every stored record
    assert contract.RECORD_KINDS == ("readings", "fix", "wave", "features", "log", "result")


def test_the_agent_and_collector_take_the_contracts_values():
    assert keys.MAX_U32 is contract.MAX_U32
    assert keys.CLOCK_SANE_AFTER * 1000 == contract.MIN_TS_MS
    assert gps._RANGES is validate.FIX_RANGES
    assert outbox.KINDS is contract.RECORD_KINDS and outbox.SINGLE is contract.SINGLE_RECORD_KINDS
    assert set(contract.LIST_KEY) | set(contract.SINGLE_RECORD_KINDS) == set(contract.RECORD_KINDS)


def test_fix_ranges_are_the_decoders():
    # each bound of FIX_FIELDS is enforced by decode(): one past it is out_of_range
    base = {"dt": 0, "mode": 3, "lat_e7": 0, "lon_e7": 0}
    for name, lo, hi in validate.FIX_FIELDS:
        for value, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
            msg = codec.encode_fixes("d-1", 1, 0, 1751327990000, "gps", [dict(base, **{name: value})])
            try:
                codec.decode("fieldwatch/v1/d-1/telemetry/fix", msg)
                assert ok, (name, value)
            except codec.WireError as e:
                assert not ok and e.code == "out_of_range", (name, value, e)


def test_no_copies_of_contract_numbers_outside_the_wire_package():
    # the literals the contract owns, outside fieldwatch/wire/ (firmware/clock.py's
    # const() copy is the one exception, checked above)
    literals = ["4294967295", "1577836800(000)?", "900000000", "1800000000", "35999"]
    found = []
    for top in ("edge_agent", "collector", "firmware", "tools"):
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if any(re.search(r"\b%s\b" % n, code) for n in literals):
                    found.append("%s:%d" % (path.relative_to(REPO_ROOT), i))
    assert found == ["firmware/clock.py:25"]


def _public(mod):
    return {n for n in vars(mod) if not n.startswith("_") and not isinstance(vars(mod)[n], type(re))
            and getattr(vars(mod)[n], "__module__", mod.__name__) == mod.__name__}


def test_codec_is_the_whole_contract():
    names = set()
    for mod in (contract, device, validate, batch):
        names |= _public(mod)
    names -= {"fail", "check_version", "get_int", "get_list", "show", "is_text", "loads", "dumps",
              "head", "FIX_REQUIRED"}   # helpers of the modules themselves
    assert names <= set(vars(codec)), sorted(names - set(vars(codec)))


def test_doc_limits_name_constants_of_contract_py():
    # docs/wire.md, "Limits": "Every number here is in fieldwatch/wire/contract.py ..."
    doc = (REPO_ROOT / "docs" / "wire.md").read_text()
    limits = doc.split("## Limits", 1)[1].split("\n## ", 1)[0]
    assert "`fieldwatch/wire/contract.py`" in limits
    named = re.findall(r"\| `([A-Za-z_.]+)` \|\s*$", limits, re.M)
    assert len(named) > 10
    for name in named:
        if name == "topics.DEVICE_ID_MAX":
            from fieldwatch.wire import topics
            assert topics.DEVICE_ID_MAX == 32
        elif name.startswith("validate."):      # collector-side only, kept off the board's heap
            from fieldwatch.wire import validate
            assert hasattr(validate, name.split(".", 1)[1]), name
        elif not name.startswith("collector."):
            assert hasattr(contract, name), name
