"""The compiled gRPC front end (issue 18): C++ sources, built into ``_door`` by build.py; optional."""
