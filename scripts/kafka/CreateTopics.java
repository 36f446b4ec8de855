// Creates basketflow's topics if they do not exist, in one JVM (each kafka-topics call would
// cost a JVM start). Run by scripts/stack as a single-file source program:
//   java -cp 'libs/*' CreateTopics.java BOOTSTRAP name:partitions:cleanup:timestamps[:retention.ms[:key=value...]] ...
// timestamps is CreateTime or LogAppendTime. A topic that exists already keeps its partitions;
// its cleanup policy, timestamp type and other configs are set to the wanted ones (idempotent),
// except a retention.ms written "?ms": set on creation only (its owner, e.g. the rewards loader,
// sets the configured one at start, which a later `stack up` must not undo).
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> wanted = new ArrayList<>();
            Map<ConfigResource, Collection<AlterConfigOp>> alter = new HashMap<>();
            for (int i = 1; i < args.length; i++) {
                String[] spec = args[i].split(":");
                Map<String, String> cfg = new HashMap<>();
                cfg.put("cleanup.policy", spec[2]);
                // LogAppendTime: the broker stamps messages with its clock; the graph's logical
                // times are these stamps (docs/design/2026-11-22-times-and-frontiers.md).
                cfg.put("message.timestamp.type", spec[3]);
                // Optional fifth field: retention.ms (-1 = forever: erasure requests must outlive
                // every replay of the events they erase).
                boolean retentionOnCreate = spec.length > 4 && spec[4].startsWith("?");
                if (spec.length > 4) cfg.put("retention.ms", spec[4].replaceFirst("^\\?", ""));
                for (int j = 5; j < spec.length; j++) {
                    String[] kv = spec[j].split("=", 2);
                    cfg.put(kv[0], kv[1]);
                }
                if (existing.contains(spec[0])) {
                    if (retentionOnCreate) cfg.remove("retention.ms");
                    List<AlterConfigOp> ops = new ArrayList<>();
                    for (Map.Entry<String, String> c : cfg.entrySet())
                        ops.add(new AlterConfigOp(new ConfigEntry(c.getKey(), c.getValue()), AlterConfigOp.OpType.SET));
                    alter.put(new ConfigResource(ConfigResource.Type.TOPIC, spec[0]), ops);
                    continue;
                }
                NewTopic t = new NewTopic(spec[0], Integer.parseInt(spec[1]), (short) 1);
                t.configs(cfg);
                wanted.add(t);
            }
            if (!alter.isEmpty()) admin.incrementalAlterConfigs(alter).all().get();
            for (Map.Entry<String, org.apache.kafka.common.KafkaFuture<Void>> e :
                     admin.createTopics(wanted).values().entrySet()) {
                try {
                    e.getValue().get();
                    System.err.println("[stack] created topic " + e.getKey());
                } catch (ExecutionException ex) {
                    if (!(ex.getCause() instanceof TopicExistsException)) throw ex;
                }
            }
        }
    }
}
