# The buffer contract's cases (docs/buffer.md), shared by the Pi's outbox and the
# ESP32's ring: tests/hil/test_buffer_contract.py runs each case on CPython over
# edge_agent.outbox (tests/hil/buffer_outbox.py) and on the MicroPython Unix port
# over firmware/ring.py (tests/hil/buffer_ring.py). MicroPython/CPython common
# subset: no f-strings, no typing; plain asserts.
#
# A case is a function case_<name>(make). make(capacity=None) opens a fresh, empty
# buffer on storage of its own (capacity: the bound of the full policy, in
# records; None: unbounded for the case's purposes) and returns an adapter:
#
#   b.append(n)        -> [(boot, seq)]: n records stored (one entry per record on
#                         the ring, one call on the Pi), their keys in order
#   b.next_to_send()   -> [(boot, seq)]: the keys of the entry handed out, now in
#                         flight; None when nothing is to be sent
#   b.confirm(ranges)  a delivery confirmation [(boot, first, last)]
#   b.rewind()         a reconnect: everything unconfirmed is to be sent again
#   b.depth()          records held and not confirmed
#   b.drops            records the full policy discarded
#   b.restart()        -> a new adapter on the same storage after a clean stop
#   b.power_cut(torn)  -> a new adapter on a copy of the storage as a power cut
#                         during the last append leaves it: that write `torn`
#                         bytes short (the last append never returned)
#   b.repeats_confirmed_after_restart
#                      True if confirmed records may come again after a restart
#                      (the ring: only whole segment files are deleted)
#
# Both implementations give out records one entry at a time; a case reasons in
# keys, not entries (the Pi joins records stored one per call into one segment).


def drain(b):
    """Every key next_to_send hands out until it says None, in order."""
    keys = []
    while True:
        got = b.next_to_send()
        if got is None:
            return keys
        keys.extend(got)


def one_range(keys):
    """The confirmation range covering keys (one boot, consecutive seqs)."""
    return (keys[0][0], keys[0][1], keys[-1][1])


def case_append_then_next_to_send_in_key_order(make):
    b = make()
    keys = b.append(3) + b.append(1) + b.append(4)
    assert len(keys) == 8 and len(set(keys)) == 8
    assert keys == sorted(keys)
    assert b.depth() == 8
    assert drain(b) == keys                     # in key order, each once
    assert b.next_to_send() is None             # all in flight: nothing more
    assert b.depth() == 8                       # handed out is not confirmed


def case_confirm_removes_exactly_the_covered_keys(make):
    b = make()
    keys = b.append(10)
    assert drain(b) == keys
    boot = keys[0][0]
    b.confirm([(boot + 1, 0, 100)])             # another boot's keys: nothing
    assert b.depth() == 10
    b.confirm([one_range(keys[:4])])
    assert b.depth() == 6
    b.rewind()
    assert drain(b) == keys[4:]                 # the confirmed ones never again
    b.confirm([one_range(keys[4:])])
    assert b.depth() == 0
    b.rewind()
    assert drain(b) == []


def case_nothing_is_deleted_without_a_confirmation(make):
    b = make()
    keys = b.append(2) + b.append(4)
    for _ in range(3):
        assert drain(b) == keys
        b.confirm([(keys[0][0], keys[-1][1] + 1, keys[-1][1] + 50)])   # later keys only
        assert b.depth() == 6
        b.rewind()
    b = b.restart()
    assert drain(b) == keys and b.depth() == 6
    assert b.drops == 0


def case_rewind_sends_everything_unconfirmed_again(make):
    b = make()
    keys = b.append(5) + b.append(3)
    assert drain(b) == keys
    b.confirm([one_range(keys[:2])])
    b.rewind()                                  # a reconnect: in flight may be lost
    assert drain(b) == keys[2:]
    b.rewind()
    assert drain(b) == keys[2:]                 # and again, as often as it takes
    assert b.depth() == 6


def case_full_drops_the_oldest_and_counts_them(make):
    cap = 20
    b = make(capacity=cap)
    first = b.append(1) + b.append(1) + b.append(1)
    assert drain(b) == first
    b.confirm([one_range(first)])               # confirmed: gone, not a drop
    assert b.depth() == 0
    keys = []
    for _ in range(5 * cap):
        keys.extend(b.append(1))
    held = b.depth()
    assert 0 < held <= cap
    assert b.drops > 0 and held + b.drops == len(keys)   # every record held or counted
    assert drain(b) == keys[len(keys) - held:]           # the newest kept, in order


def case_power_cut_mid_write_loses_no_stored_record(make):
    b = make()
    stored = b.append(1) + b.append(2) + b.append(1) + b.append(1)
    under_way = b.append(1)                     # the power goes during this one
    b = b.power_cut(7)
    got = drain(b)
    assert got in (stored, stored + under_way)  # at most the unfinished append is lost
    assert b.depth() == len(got)
    more = b.append(2)                          # readable, and writable again
    assert more[0][0] > stored[-1][0]           # a new boot: no key reused
    b.rewind()
    assert drain(b) == got + more
    b.confirm([one_range(got), one_range(more)])
    assert b.depth() == 0


def case_keys_are_unique_across_restarts(make):
    b = make()
    seen = b.append(3)
    assert drain(b) == seen
    b.confirm([one_range(seen[:1])])
    unconfirmed = seen[1:]
    for _ in range(3):
        b = b.restart()
        got = drain(b)
        # everything unconfirmed comes again, once; nothing that was never stored
        assert len(set(got)) == len(got) and set(unconfirmed) <= set(got) <= set(seen)
        if not b.repeats_confirmed_after_restart:
            assert got == unconfirmed
        new = b.append(2)
        assert not set(new) & set(seen)         # keys never reused
        assert new[0][0] > seen[-1][0]          # a new boot each start
        seen = seen + new
        unconfirmed = unconfirmed + new


CASES = [
    ("append_then_next_to_send_in_key_order", case_append_then_next_to_send_in_key_order),
    ("confirm_removes_exactly_the_covered_keys", case_confirm_removes_exactly_the_covered_keys),
    ("nothing_is_deleted_without_a_confirmation", case_nothing_is_deleted_without_a_confirmation),
    ("rewind_sends_everything_unconfirmed_again", case_rewind_sends_everything_unconfirmed_again),
    ("full_drops_the_oldest_and_counts_them", case_full_drops_the_oldest_and_counts_them),
    ("power_cut_mid_write_loses_no_stored_record", case_power_cut_mid_write_loses_no_stored_record),
    ("keys_are_unique_across_restarts", case_keys_are_unique_across_restarts),
]


def case(name):
    """The case function called name."""
    for n, fn in CASES:
        if n == name:
            return fn
    raise KeyError(name)


def write_forever(b, say, pause=None):
    """Append one record at a time and say("stored BOOT SEQ") after each returns (until killed).

    pause(i), if given, is called after the i-th append (to bound how much is written).
    """
    say("ready %d" % b.append(1)[0][0])
    i = 0
    while True:
        k = b.append(1)[0]
        say("stored %d %d" % k)
        i += 1
        if pause is not None:
            pause(i)


def say_drain(b, say):
    """say("sent BOOT SEQ") for each key handed out, confirming each entry; then append one record."""
    while True:
        got = b.next_to_send()
        if got is None:
            break
        for k in got:
            say("sent %d %d" % k)
        b.confirm([one_range(got)])
    say("appended %d %d" % b.append(1)[0])
    say("depth %d" % b.depth())
