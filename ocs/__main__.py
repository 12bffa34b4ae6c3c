import sys

from ocs.cli.main import main

sys.exit(main())
