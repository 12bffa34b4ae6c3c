import sys

from ocs.cli import main

sys.exit(main())
