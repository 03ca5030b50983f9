"""The tasks a user runs (`fab deploy`, `fab status`, ...): each module holds its task's own steps."""
