"""``python -m lifeline_agent`` is ``lifeline-agent``."""

from lifeline_agent.cli import main

main()
