# Frees the collector-side half of wire.codec from the device's heap.
#
# fieldwatch/wire/codec.py is the one implementation of the wire contract, shared by the
# collector (CPython) and the firmware. A device only *encodes* its records and
# status and *decodes* two kinds of message (cmd, ack); the validators of every
# telemetry kind, the wave decoder and the operator-side encoders are never called on
# a board, yet their bytecode takes ~5 KB of a 100 KB heap on the Unix port (about
# half that on the ESP32). drop_unused() deletes them from the imported module so
# the garbage collector can reclaim them.
#
# Safe because Python looks module globals up at call time: what remains never calls
# what is dropped (tests/hil/test_fw_app.py runs every cmd and ack golden vector and
# the encoders the firmware uses through the trimmed module and compares them with
# the full one). A name that does not exist (an older or newer codec) is skipped.

UNUSED = ("_decode_result", "_decode_status", "_dt", "_fix", "_header", "_is_num",
          "_json_value", "_log", "_name", "_num", "_opt_int", "_reading", "_records",
          "_window", "check_time", "decode_wave", "encode_ack", "encode_cmd",
          "encode_logs", "encode_readings", "encode_wave", "ranges_of")


def drop_unused(module):
    """Delete the UNUSED names from `module` (those present); return how many went."""
    gone = 0
    for name in UNUSED:
        if name in module.__dict__:
            delattr(module, name)
            gone += 1
    return gone
