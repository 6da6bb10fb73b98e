"""What the tests share and are not tests themselves: builders of tiny runs and probes (`helpers`),
the headless-browser check of the reports (`browser`), the run-time annotation checker
(`typecheck`), a local chat-completions server that speaks a judge's protocol (`judge_server`),
planted judge answers (`judge_pairs`) and toy tasks for the executors (`toy_tasks`)."""
