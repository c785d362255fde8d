# The whole of wire contract v1 as one API, for CPython code (collector, edge agent,
# tools, tests): `from fieldwatch.wire import codec`, then codec.decode(...),
# codec.encode_features(...), codec.MAX_RECORDS ...
#
# Nothing is defined here; each name comes from the module that owns it:
#   contract.py  constants, limits, enumerations, record kinds, WireError
#   device.py    what a device uses: encoders of what it sends, decoders of cmd and ack
#   validate.py  what only the collector and tools use: decode() of every kind, the
#                wave decoder, the encoders of cmd and ack, ranges_of()
#   batch.py     a batched message from records already encoded (the Pi's outbox)
# The firmware never imports this module (it would load validate.py into the board's
# heap); it imports contract and device, the only wire modules flashed to it.

from fieldwatch.wire.batch import encode_batch, record_bodies, record_body, record_item  # noqa: F401
from fieldwatch.wire.contract import (  # noqa: F401
    ADXL_RANGES_G, ADXL_RATES_HZ, AXES, COMMANDS, FEATURE_KEYS, LIST_KEY, LOG_LEVELS,
    MAX_CMD_ID, MAX_DETAIL_DEPTH, MAX_DT_MS, MAX_EXACT_INT, MAX_FUTURE_MS, MAX_LOG_TEXT,
    MAX_NAME, MAX_PAYLOAD, MAX_RECORDS, MAX_TS_MS, MAX_U32, MAX_WAVE_SAMPLES, MIN_TS_MS,
    RECORD_KINDS, RESET_REASONS, SINGLE_RECORD_KINDS, STATES, TIME_QUALITY, VERSION,
    WAVE_HEADER, WAVE_HEADER_SIZE, WAVE_MAGIC, WireError, is_int)
from fieldwatch.wire.device import (  # noqa: F401
    check_args, check_envelope, covers, decode_ack, decode_cmd, decode_downlink, encode_features,
    encode_fixes, encode_logs, encode_readings, encode_result, encode_status, encode_wave,
    wave_head)
from fieldwatch.wire.validate import (  # noqa: F401
    FIX_FIELDS, FIX_MODES, FIX_RANGES, MAX_UNTIMED_MS, check_time, decode, decode_wave, encode_ack,
    encode_cmd, ranges_of)
