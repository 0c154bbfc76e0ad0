"""Test sessions. Each framework runs in its own process: torch, TensorFlow and JAX never share one.

The sessions run in the current environment (`python=False`): set it up once with the README's
first command (`pip install -c constraints.txt -e ".[all,test]"`), then run `nox`. A missing
framework fails its session instead of skipping it.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "core", "tokenizer", "torch", "keras", "flax", "conformance", "cli",
                        "wheel"]
nox.options.error_on_missing_interpreters = True

PYTEST = ("python", "-m", "pytest", "-q", "-p", "no:cacheprovider")


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")


@nox.session(python=False)
def core(session: nox.Session) -> None:
    session.run(*PYTEST, "tests/core", *session.posargs)


@nox.session(python=False)
def tokenizer(session: nox.Session) -> None:
    session.run(*PYTEST, "tests/tokenizer", *session.posargs)


@nox.session(python=False)
def torch(session: nox.Session) -> None:
    session.run(*PYTEST, "tests/torch", *session.posargs)


@nox.session(python=False)
def keras(session: nox.Session) -> None:
    # The model runs on every Keras backend; the tokenizer layer, tf.data, XLA generation and
    # SavedModel export are TensorFlow's.
    session.run(*PYTEST, "tests/keras", *session.posargs, env={"KERAS_BACKEND": "tensorflow"})
    for backend in ("jax", "torch"):
        session.run(*PYTEST, "tests/keras/model", *session.posargs, env={"KERAS_BACKEND": backend})


@nox.session(python=False)
def flax(session: nox.Session) -> None:
    session.run(*PYTEST, "tests/flax", *session.posargs)


@nox.session(python=False)
def conformance(session: nox.Session) -> None:
    session.run(*PYTEST, "tests/conformance", *session.posargs)


@nox.session(python=False)
def cli(session: nox.Session) -> None:
    """The `gpt2` command; each call runs in its own process, one backend at a time."""
    session.run(*PYTEST, "tests/cli", *session.posargs)


@nox.session(python=False)
def wheel(session: nox.Session) -> None:
    """Build the wheel and import every package from a fresh venv (a checkout on sys.path would
    hide packaging mistakes)."""
    session.run(*PYTEST, "tests/wheel", *session.posargs)


@nox.session(python=False)
def slow(session: nox.Session) -> None:
    """Not in the default sessions: the random-kill loop (a child SIGKILLed at random moments of
    single-file, sharded and training saves; each folder must load as one whole version)."""
    session.run(*PYTEST, "-s", "tests/slow", *session.posargs)
