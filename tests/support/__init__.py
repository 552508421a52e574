"""What the tests share that is not a fixture: kits, fakes, harnesses and the MQTT probe.

Fixtures stay in the conftest.py files; everything a test imports lives here, one module per
area (`engine`, `hal`, `modelimport`, `mqtt`, `nspawn`, `ota`, `runtime`, `soak`, `sync`,
`systemd`, `waiting`). `tests/` is a package and pytest puts the repository root on sys.path
(`pythonpath = ["."]` in pyproject.toml), so a test imports a helper by its full name, with no
sys.path edits:

    from tests.support import engine as kit
    from tests.support.sync import FakeEngine, agent_config
    from tests.support.waiting import until

A child process that imports these (a plugin entry point, an agent script) gets the root on its
PYTHONPATH from `tests.support.paths.child_env()`. A new test folder needs an empty __init__.py.
"""
