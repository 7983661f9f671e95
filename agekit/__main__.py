import sys

from agekit.cli import main

sys.exit(main())
