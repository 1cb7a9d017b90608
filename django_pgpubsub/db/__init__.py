"""Everything that differs between drivers, and every SQL statement.

``sql`` names each statement; ``connection`` reaches Django's connections and
builds dedicated ones from DATABASES; ``drivers`` and ``aconnection`` are the
listening connections, sync and async.
"""
