"""Shared start-up of the comparison scripts: finds a Python that has the reference
packages (the running one, else Debian's python3, where python3-jieba and
python3-fuzzywuzzy install), re-executing the script there; exits 77 (skip) with a line
naming what is missing. Extra module directories may be given in KVWEAVE_PYTHONPATH
(e.g. a virtual environment's site-packages holding the PyPI `rouge` package); the
site-packages of $KVWEAVE_HOME/eval-venv (default ~/.cache/kvweave/eval-venv) are looked
at too, so `python3 -m venv ~/.cache/kvweave/eval-venv && ~/.cache/kvweave/eval-venv/bin/pip
install rouge` once is enough."""
import glob
import importlib
import os
import sys

DEBIAN_PYTHON = "/usr/bin/python3"


def require(modules):
    extra = os.environ.get("KVWEAVE_PYTHONPATH", "").split(os.pathsep)
    home = os.environ.get("KVWEAVE_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "kvweave")
    extra += sorted(glob.glob(os.path.join(home, "eval-venv", "lib", "python3*",
                                           "site-packages")))
    for p in extra:
        if p and p not in sys.path:
            sys.path.append(p)
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if not missing:
        return
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and \
            os.path.exists(DEBIAN_PYTHON) and not os.environ.get("KW_EVAL_REEXEC"):
        os.environ["KW_EVAL_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON] + sys.argv)
    print("SKIP: python module(s) %s not found (install python3-jieba, python3-fuzzywuzzy; "
          "`pip install rouge` into $KVWEAVE_HOME/eval-venv, or into a venv named by "
          "KVWEAVE_PYTHONPATH)" % ", ".join(missing))
    sys.exit(77)
