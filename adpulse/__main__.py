import sys

from adpulse.cli import main

sys.exit(main())
