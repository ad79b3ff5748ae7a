"""Layer 3: the model hub. Versions, aliases (champion, challenger, …), promote/rollback, cards,
import/export."""
