"""fleetctl's tables: aligned, times shortened, nothing a device sends can drive the terminal."""

from fieldwatch.tools.fleetctl import table


def test_fleetctl_table_aligns_shortens_times_and_neutralises_terminal_escapes():
    rows = [{"ts": "2026-11-23T10:57:08.960000+00:00", "text": "\x1b[2J\x1b[31mred\x07", "v": 0.000123456},
            {"ts": "2026-11-23T12:57:08+02:00", "text": "plain", "v": None}]
    out = table(rows, [("TIME", "ts"), ("TEXT", "text"), ("V", "v")])
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "TEXT", "V"]
    assert set(lines[1]) <= {"-", " "}
    assert "2026-11-23 10:57:08.960Z" in lines[2] and "2026-11-23 10:57:08.000Z" in lines[3]
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J\\x1b[31mred\\x07" in out
    assert "0.0001235" in lines[2]
    assert lines[2].index("\\x1b") == lines[3].index("plain"), "columns line up"
