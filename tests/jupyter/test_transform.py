from skyward.jupyter.transform import TARGET, rewrite


def test_cell_magic_becomes_one_await():
    lines = ["%%skyward run --on 1\n", "x = 1\n", "print('%s' % x)\n"]
    out = rewrite(lines)
    assert out == [f"await {TARGET}('run --on 1', \"x = 1\\nprint('%s' % x)\\n\")\n"]
    compile("async def f():\n    " + out[0], "<t>", "exec")


def test_line_magics_are_rewritten_in_place():
    lines = ["a = 1\n", "%skyward up --nodes 2\n", "  %skyward status\n", "b = 2\n"]
    out = rewrite(lines)
    assert out[0] == "a = 1\n" and out[3] == "b = 2\n"
    assert out[1] == f"await {TARGET}('up --nodes 2', None)\n"
    assert out[2].startswith("  await ")


def test_other_text_and_help_untouched():
    for lines in (
        ["%skywardx\n"],
        ["%%skywardish\n", "x\n"],
        ["%skyward?\n"],
        ["print('%skyward up')\n"],
    ):
        assert rewrite(list(lines)) == lines
