"""The console's screens: overview, workers, tasks, queues, their drill-downs and dialogs."""
