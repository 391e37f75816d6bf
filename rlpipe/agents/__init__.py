"""Multi-turn agents: environments (reset -> observation, step(action) -> observation, reward, done), the tools they
call, and the tool-call format. The rollout side that drives them token by token is rlpipe.rollout.multi_turn."""
