"""Starting the controller: what ``molt run`` wires together (caches, writes, providers,
history, leader election, the manager) and the registry of providers it can use."""
