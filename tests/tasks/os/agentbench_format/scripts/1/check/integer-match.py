# argv[1]: the agent's answer; argv[2]: the output of the previous check (the example re-run).
import sys

sys.exit(0 if int(sys.argv[1]) == int(sys.argv[2]) else 1)
