"""Workspaces (ws_allocate, ws_list, ...): site tools or the local implementation, and cache workspaces."""
