// Creates basketflow's topics if they do not exist, in one JVM (each kafka-topics call would
// cost a JVM start). Run by scripts/stack as a single-file source program:
//   java -cp 'libs/*' CreateTopics.java BOOTSTRAP name:partitions:cleanup ...
// A topic that exists already is left as it is (idempotent), whatever its settings.
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> wanted = new ArrayList<>();
            for (int i = 1; i < args.length; i++) {
                String[] spec = args[i].split(":");
                if (existing.contains(spec[0])) continue;
                NewTopic t = new NewTopic(spec[0], Integer.parseInt(spec[1]), (short) 1);
                Map<String, String> cfg = new HashMap<>();
                cfg.put("cleanup.policy", spec[2]);
                // Decisions and events must survive a broker restart exactly as acknowledged.
                cfg.put("min.insync.replicas", "1");
                t.configs(cfg);
                wanted.add(t);
            }
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
