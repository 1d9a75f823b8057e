"""Grid'5000: OAR reservations (REST API, or oarsub over SSH), SSH through the access
jump host (paramiko), a Ray cluster on the reserved nodes, and node energy from Kwollect.

Imports nothing from `sweeper`; errors are `G5kError` with a message naming what failed
and what to do.
"""


class G5kError(Exception):
    """Something on the Grid'5000 side failed; the message says what and what to do."""
