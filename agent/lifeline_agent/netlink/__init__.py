"""Talking to the kernel over netlink without pyroute2 on the hot paths, shared by the sources
(links, routes, WireGuard, CAD sessions) and the netlink watcher: ``attributes`` walks replies,
``kept_socket`` keeps one socket open between requests, ``rtnetlink`` reads links and routes.
"""
