"""Datamover commands (dtcp, dtls, ...) and programs as background handles, on a backend each."""
