"""The environment's size against what Linux lets a program start with: read from the server's files as
names and sizes, added up with the inventory's values, refused with the sizes and the limit."""

from __future__ import annotations

import subprocess

from tasks.facts import envsize
from tasks.commands import release as commands
from tasks.layout import Layout
from tasks.cli.operate import encode_config

LAYOUT = Layout("mysite")


def test_the_probe_reads_names_and_sizes_of_both_files_never_their_values(tmp_path):
    env, config = tmp_path / "env", tmp_path / "config.env"
    env.write_text(f"{commands.ENV_FILE_MARK}DJANGO_DB_NAME OLD_ONE\nDJANGO_SECRET_KEY='{'s' * 60}'\n"
                   "DJANGO_DB_NAME='mysite'\nOPERATOR=plain\n# a comment\n")
    config.write_text(encode_config({"TOKEN": 'a"b$c', "BIG": "é" * 1000}))
    command = envsize.probe(LAYOUT).command.replace(LAYOUT.env_file, str(env)).replace(LAYOUT.config_env,
                                                                                          str(config))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    found = envsize.probe(LAYOUT).parse(out.stdout, out.returncode)
    assert found["env"] == {"DJANGO_SECRET_KEY": 60, "DJANGO_DB_NAME": 6, "OPERATOR": 5}
    assert found["config"] == {"TOKEN": 5, "BIG": 2000}  # bytes, as systemd passes them, unescaped
    assert found["managed"] == ["DJANGO_DB_NAME", "OLD_ONE"] and found["arg_max"] > 0
    assert "s" * 60 not in out.stdout


def test_missing_files_are_empty_not_an_error(tmp_path):
    command = envsize.probe(Layout("nothing-here")).command.replace("/srv/", str(tmp_path) + "/")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert envsize.probe(LAYOUT).parse(out.stdout, out.returncode)["env"] == {}


def test_a_deploy_counts_the_inventory_values_and_drops_names_it_no_longer_manages():
    found = {"env": {"DJANGO_SECRET_KEY": 60, "OLD_ONE": 10 ** 6, "OPERATOR": 3}, "managed": ["OLD_ONE"],
             "config": {"TOKEN": 9}, "arg_max": 2 * envsize.MIB}
    sizes = envsize.after_deploy(found, {"BIG": "x" * 100, "DJANGO_DB_NAME": "mysite"}, {"BIG"})
    assert "OLD_ONE" not in sizes and sizes["OPERATOR"] == (3, envsize.ENV)
    assert sizes["BIG"] == (100, envsize.INVENTORY) and sizes["DJANGO_DB_NAME"] == (6, envsize.GANGWAY)
    assert sizes["TOKEN"] == (9, envsize.CONFIG)


def test_one_variable_past_128_kib_is_named_with_its_size_and_the_limit():
    sizes = {"SMALL": (10, envsize.ENV), "CERT_BUNDLE": (200 * 1024, envsize.CONFIG)}
    text = envsize.problem(sizes, 2 * envsize.MIB)
    assert "CERT_BUNDLE (200.0 KiB, fab config)" in text and "128.0 KiB (MAX_ARG_STRLEN)" in text
    assert "never start" in text
    # At the limit exactly: NAME=value and its NUL fill 128 KiB.
    fits = {"A": (envsize.MAX_ARG_STRLEN - 3, envsize.ENV)}
    assert envsize.problem(fits, 2 * envsize.MIB) is None
    assert envsize.problem({"A": (envsize.MAX_ARG_STRLEN - 2, envsize.ENV)}, 2 * envsize.MIB)


def test_many_variables_past_the_total_are_refused_with_the_total_and_the_server_s_limit():
    sizes = {f"V{i}": (100 * 1024, envsize.INVENTORY if i % 2 else envsize.CONFIG) for i in range(25)}
    text = envsize.problem(sizes, 2 * envsize.MIB)
    assert "would be 2.45 MiB" in text and "past the 2.00 MiB" in text and "ARG_MAX" in text
    assert envsize.problem(dict(list(sizes.items())[:19]), 2 * envsize.MIB) is None


def test_the_limit_is_the_server_s_within_what_linux_allows_at_most():
    assert envsize.limit_of({"arg_max": 4 * envsize.MIB}) == 4 * envsize.MIB
    assert envsize.limit_of({"arg_max": 64 * envsize.MIB}) == envsize.KERNEL_CAP
    assert envsize.limit_of(None) == envsize.limit_of({"arg_max": -1}) == envsize.DEFAULT_ARG_MAX
