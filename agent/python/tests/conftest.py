import os
import sys

# helpers.py is shared by tests/unit and tests/e2e.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
