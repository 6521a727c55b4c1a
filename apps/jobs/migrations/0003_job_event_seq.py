from django.db import migrations, models


class Migration(migrations.Migration):
    """Number events from a counter on the job row, starting after the events it already has."""

    dependencies = [
        ("jobs", "0002_job_callback_url_job_cancel_requested_at_and_more"),
        ("events", "0001_initial"),
    ]

    operations = [
        migrations.AddField(model_name="job", name="event_seq", field=models.PositiveIntegerField(default=0)),
        migrations.RunSQL(
            "UPDATE jobs_job SET event_seq = COALESCE("
            "(SELECT MAX(seq) FROM events_jobevent WHERE events_jobevent.job_id = jobs_job.id), 0)",
            migrations.RunSQL.noop),
    ]
