"""The page inside Airflow: a media buyer's upload, check, add, update and history screens.

An Airflow plugin (``plugin.ConversionsPlugin``, found through the package's
``airflow.plugins`` entry point) mounts the FastAPI app of ``app`` at ``/conversions`` in the
api-server and puts "Conversions" into the UI's navigation. ``access`` says who may do what
(Airflow's own login and roles), ``forms`` turns typed lines into CSV files; everything else is
the engine's: the dry run, the inbox, the ledger, the reports.
"""
