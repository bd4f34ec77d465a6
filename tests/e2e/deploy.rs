//! The deployment files in `deploy/`: they must be valid for the tools that read them.
