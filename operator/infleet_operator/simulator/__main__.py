import sys

from infleet_operator.simulator.cli import main

sys.exit(main())
