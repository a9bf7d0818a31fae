"""Leader election: which replica may run promotions and move traffic."""

from sidecar.leadership.base import AlwaysLeader, Leadership
from sidecar.leadership.lease import LeaseLeadership

__all__ = ["AlwaysLeader", "Leadership", "LeaseLeadership"]
