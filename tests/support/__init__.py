"""Test support: faithful emulations of Windows behaviour that cannot be run here.

- `winargv`: how a native program started from Windows PowerShell 5.1 receives its arguments
  (PowerShell's legacy command-line building, then the C runtime's / CommandLineToArgvW's parsing).
- `psgrammar`: a syntax gate for generated PowerShell (tree-sitter's PowerShell grammar).
"""
