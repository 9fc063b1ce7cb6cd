"""Every user mistake in ``%skyward`` arguments gives one clear line (IPython UsageError)."""

import pytest
from IPython.core.error import UsageError
from skyward.jupyter.options import (
    offers_spec,
    parse_command,
    parse_gpus,
    parse_targets,
    spec_from,
)


def up(line):
    command, args = parse_command("up " + line)
    assert command == "up"
    return spec_from(args)


def test_defaults():
    spec = up("")
    # No --provider: "" means the cheapest configured provider, chosen at `up` time.
    assert spec.provider == "" and spec.nodes == 1 and spec.pip == ()
    assert spec.accelerator is None and spec.accelerator_count == 0 and spec.spot == "auto"


def test_env_values_stay_out_of_the_spec_and_env_files_are_read(tmp_path):
    from skyward.jupyter.options import PARSERS, env_values

    dotenv = tmp_path / ".env"
    dotenv.write_text("# tokens\nexport HF_TOKEN='hf_abc def'\nWANDB_KEY=w1  # inline\n\nA=file\n")
    args = PARSERS["up"].parse_args(["--env-file", str(dotenv), "--env", "A=flag"])
    assert env_values(args) == {"HF_TOKEN": "hf_abc def", "WANDB_KEY": "w1", "A": "flag"}
    spec = spec_from(args)
    assert spec.env == ("HF_TOKEN", "WANDB_KEY", "A") and "hf_abc" not in repr(spec)
    dotenv.write_text("not a pair\n")
    with pytest.raises(UsageError, match="line 1"):
        env_values(PARSERS["up"].parse_args(["--env-file", str(dotenv)]))


def test_pip_credentials_are_masked():
    from skyward.secrets import mask_url_credentials

    spec = "pkg @ git+https://user:ghp_token@github.com/o/r.git"
    assert mask_url_credentials(spec) == "pkg @ git+https://***@github.com/o/r.git"
    assert mask_url_credentials("numpy==2.0 https://pypi.org/simple") == (
        "numpy==2.0 https://pypi.org/simple"
    )


def test_full_line():
    spec = up(
        "--provider container --nodes 2 --pip numpy 'torch==2.13.0' --env A=1 --env B=x=y "
        "--on-demand --gpus A100:4 --name exp --timeout 60"
    )
    assert spec.nodes == 2 and spec.pip == ("numpy", "torch==2.13.0")
    assert spec.env == ("A", "B") and spec.spot == "never"  # names only: values are secrets
    assert (spec.accelerator, spec.accelerator_count) == ("A100", 4)
    assert spec.name == "exp" and spec.launch_timeout == 60


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--provider nimbus", "--provider 'nimbus' is unknown"),
        ("--nodes 0", "at least 1 node"),
        ("--nodes -3", "at least 1 node"),
        ("--nodes two", "invalid int value"),
        ("--gpus A100:x", "malformed"),
        ("--gpus :4", "malformed"),
        ("--gpus 0", "at least 1"),
        ("--env NOEQUALS", "KEY=VALUE"),
        ("--spot --on-demand", "not allowed with"),
        ("--runtime lxc", "invalid choice"),
        ("--max-price -1", "positive"),
        ("--bogus", "unrecognized arguments"),
    ],
)
def test_bad_up_arguments(line, message):
    with pytest.raises(UsageError, match=message):
        up(line)


def test_provider_not_in_the_registry_says_so(monkeypatch):
    from skyward import providers

    monkeypatch.delitem(providers.PROVIDERS, "runpod")
    with pytest.raises(UsageError, match="not available in this version"):
        up("--provider runpod")


def test_cloud_providers_and_a_container_runtime():
    assert up("--provider runpod --gpus A100:2").provider == "runpod"
    assert up("--provider verda").provider == "verda"
    assert up("--runtime podman").provider == "container"  # --runtime implies container
    with pytest.raises(UsageError, match="container provider only"):
        up("--provider vastai --runtime docker")


def test_offers_arguments():
    command, args = parse_command(
        "offers --provider vastai --gpus A100:4 --spot --region US --max-price 9"
    )
    spec = offers_spec(args)
    assert command == "offers" and spec.provider == "vastai" and spec.spot == "always"
    assert (spec.accelerator, spec.accelerator_count, spec.region) == ("A100", 4, "US")
    assert spec.max_price == 9.0
    assert offers_spec(parse_command("offers")[1]).provider == ""
    for line, message in [
        ("offers --provider nimbus", "is unknown"),
        ("offers --gpus x:y", "malformed"),
        ("offers --spot --on-demand", "not allowed with"),
        ("offers --max-price 0", "positive"),
    ]:
        with pytest.raises(UsageError, match=message):
            offers_spec(parse_command(line)[1])


def test_unknown_command_and_help(capsys):
    with pytest.raises(UsageError, match="unknown command 'upp'"):
        parse_command("upp")
    assert parse_command("") is None
    assert "%skyward up" in capsys.readouterr().out
    assert parse_command("up --help") is None
    assert "--nodes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", (None, 4)),
        ("A100:2", ("A100", 2)),
        ("H100", ("H100", 1)),
        ("RTX-4090:1", ("RTX-4090", 1)),
    ],
)
def test_gpus(text, expected):
    assert parse_gpus(text) == expected


def test_targets():
    assert parse_targets("all") is None
    assert parse_targets("1") == [1]
    assert parse_targets("0,3") == [0, 3]
    for bad in ("x", "", "-1", "1,,a"):
        with pytest.raises(UsageError, match="--on"):
            parse_targets(bad)


def test_up_help_says_what_container_does_not_isolate(capsys):
    assert parse_command("up --help") is None
    text = " ".join(capsys.readouterr().out.split())
    assert "sandboxed" not in text
    assert "no sandbox" in text and "~/.aws" in text and "as you" in text
    assert "session, folder (its HOME) and loopback address" in text
