"""The schema's revisions, oldest first: `r0001_reports`, `r0002_machines_feedback`,
`r0003_lease`."""

__all__: list[str] = []
