import sys

from fieldwatch_agent.cli import main

sys.exit(main())
