"""Every `ruvon` command given bad input ends in one clear sentence, not a traceback (issue 11).

The cases run `main()`, the console script's entry point, in this process: an exception it
does not turn into a message escapes and fails the test. One case runs the real console
script in a subprocess, to see what a user's terminal shows.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from ruvonvllm.commands import main as cli


def _tiny_dummy_config(tmp_path) -> str:
    config = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


# command -> (bad arguments, words the message must contain). {dummy} is a tiny random model.
BAD_INPUTS = {
    "generate": (["--temperature", "-1"], "temperature must be >= 0"),
    "chat": (["--model", "/no/such/model"], "does not exist"),
    "info": (["--model", "{dummy}", "--load-format", "dummy", "--kv-cache-bytes", "10"], "too small"),
    "serve": (["--model", "/no/such/model"], "does not exist"),
    "bench latency": (["--batch-size", "0"], "--batch-size"),
    "bench throughput": (["--model", "{dummy}", "--load-format", "dummy", "--num-prompts", "0"],
                         "num_requests must be >= 1"),
    "bench prefix-cache": (["--num-prompts", "0"], "--num-prompts"),
    "bench serve": (["--base-url", "http://127.0.0.1:1"], "is a server running there?"),
    "bench stall": (["--base-url", "http://127.0.0.1:1"], "is a server running there?"),
}


def _command_names() -> set[str]:
    """Every leaf command of the app, as a user types it ("bench serve")."""
    names = set()

    def walk(app: typer.Typer, prefix: str) -> None:
        for command in app.registered_commands:
            names.add(prefix + (command.name or command.callback.__name__.replace("_", "-")))
        for group in app.registered_groups:
            walk(group.typer_instance, prefix + group.name + " ")

    walk(cli.app, "")
    return names


def test_every_command_has_a_bad_input_case():
    assert _command_names() == set(BAD_INPUTS)


@pytest.mark.parametrize("command", sorted(BAD_INPUTS))
def test_bad_input_ends_in_one_sentence(command, tmp_path, monkeypatch, capsys):
    arguments, expected = BAD_INPUTS[command]
    arguments = [a.replace("{dummy}", _tiny_dummy_config(tmp_path)) for a in arguments]
    monkeypatch.delenv("RUVON_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["ruvon", *command.split(), *arguments])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    stderr = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert stderr.startswith("error: ") and expected in stderr, stderr
    assert "Traceback" not in stderr


def test_bad_option_value_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ruvon", "serve", "--port", "-1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_console_script_prints_no_traceback():
    result = subprocess.run([sys.executable, "-m", "ruvonvllm.commands.main", "generate", "--model", "/no/such"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error: model path '/no/such' does not exist" in \
        " ".join(result.stderr.split())
