"""One module per command, all the same shape: validate and resolve inputs at the edge (``edge``), prepare
face sets through the store (``workspace``), call one analysis, write OUT (``idleak.outputs``).

audit, embed, gate, lookup, mia, invert, report (rebuild) and demo; the CLI only parses and prints.
"""
