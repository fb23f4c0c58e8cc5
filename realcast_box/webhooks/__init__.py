"""Webhook delivery: signing, URL checks, the SQLite outbox and the dispatcher.

``outbox.Outbox`` turns bus events into pending deliveries, and
``dispatcher.Dispatcher`` sends them with retries. The REST API for
webhooks is in realcast_box.api.webhooks, and the queries in
realcast_box.store.webhooks.
"""
