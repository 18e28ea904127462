// Events made while the browser is offline, kept in IndexedDB until it is
// online again (and across page loads); in memory where IndexedDB is missing.

type EventData = Record<string, unknown>;

const DB = "sluice-client";
const STORE = "events";

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

/** A queue of events in IndexedDB. */
export class OfflineStore {
  private db: Promise<IDBDatabase> | undefined;
  private memory: EventData[] = [];

  private open(): Promise<IDBDatabase> | undefined {
    if (typeof indexedDB === "undefined") return undefined;
    this.db ??= new Promise((resolve, reject) => {
      const r = indexedDB.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE, { autoIncrement: true });
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    return this.db;
  }

  /** Keeps `events` until they are taken. */
  async put(events: EventData[]): Promise<void> {
    const opened = this.open();
    if (!opened) {
      this.memory.push(...events);
      return;
    }
    try {
      const tx = (await opened).transaction(STORE, "readwrite");
      for (const e of events) tx.objectStore(STORE).add(e);
      await done(tx);
    } catch {
      this.memory.push(...events);
    }
  }

  /** Every kept event, oldest first, removed from the store in the same transaction. */
  async take(): Promise<EventData[]> {
    const held = this.memory.splice(0);
    const opened = this.open();
    if (!opened) return held;
    try {
      const tx = (await opened).transaction(STORE, "readwrite");
      const all = tx.objectStore(STORE).getAll();
      tx.objectStore(STORE).clear();
      await done(tx);
      return [...(all.result as EventData[]), ...held];
    } catch {
      return held;
    }
  }
}
