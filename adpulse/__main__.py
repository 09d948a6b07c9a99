import sys

from adpulse.cli.main import main

sys.exit(main())
