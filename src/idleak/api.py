"""The importable API: the same jobs the CLI runs, as functions (each lives in ``idleak.jobs``).

    import idleak.api as idleak
    result = idleak.audit("synthetic/", "real/", out="audit-out")
"""

from idleak.jobs.audit import audit
from idleak.jobs.demo import run_demo
from idleak.jobs.embed import embed
from idleak.jobs.gate import gate
from idleak.jobs.lookup import lookup
from idleak.jobs.mia import mia
from idleak.jobs.report import report
from idleak.jobs.workspace import Workspace

__all__ = ["Workspace", "audit", "embed", "gate", "lookup", "mia", "report", "run_demo"]
