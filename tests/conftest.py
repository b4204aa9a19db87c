import os
import tempfile

# generated steps go to a per-session cache, so tests never read a stale one from elsewhere
os.environ.setdefault("KGRAPH_CACHE_DIR", os.path.join(tempfile.gettempdir(), "kgraph-test-cache"))
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
