"""`sgpfab apply`'s refusals: one `error:` line and exit 1, before anything touches the host."""

from sgpfab.cli import main


def test_refusals_are_one_line(tmp_path, capsys):
    assert main(["apply", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err == f"error: no bundle directory at {tmp_path / 'missing'}\n"
    assert main(["apply", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not a release bundle") and err.count("\n") == 1
