"""`python -m defense_interp.verify`: see the package docstring."""

import sys

from defense_interp.verify import main

sys.exit(main())
